"""The one `main` every rclpy node shell uses: init, spin, shut down once and cleanly.

On SIGINT `ros2 launch` forwards the signal to every node; spinning ends with
KeyboardInterrupt or ExternalShutdownException and `rclpy.try_shutdown()` is safe to call
whoever shut down first. A ValueError or an rclpy ParameterException from the node's constructor
(invalid parameters, no such device) is reported and turned into exit status 2 instead of a
traceback.
"""
from __future__ import annotations

import logging


def _parameter_errors() -> tuple[type, ...]:
    """rclpy's parameter errors (e.g. a params file giving a value of another type than the
    declaration), which are not ValueErrors."""
    import rclpy.exceptions

    base = getattr(rclpy.exceptions, "ParameterException", None)
    return (base,) if isinstance(base, type) else ()


def spin_node(make_node_class, name: str, args=None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    logging.basicConfig(level=logging.INFO)
    rclpy.init(args=args)
    node = None
    try:
        node = make_node_class()()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, *_parameter_errors()) as exc:
        logging.getLogger(name).error(f"cannot start {name}: {exc}")
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
