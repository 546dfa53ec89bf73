"""ROS-free core: every algorithm lives here; the live node, the replay tool and the
benchmarks all call it unchanged."""
