"""ament_python package. Versions are pinned in requirements.txt only (one place)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "av_localization_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["sim/assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
        (f"share/{PACKAGE}/models", glob("models/*")),
    ],
    install_requires=["numpy", "numba", "scipy", "pyyaml", "tqdm", "onnxruntime",
                      "opencv-python-headless", "rosbags", "pyroomacoustics", "motmetrics",
                      "soundfile", "matplotlib", "imageio"],
    # the Cyclone DDS shells (av-dds-*), for machines without rclpy
    extras_require={"dds": ["cyclonedds"]},
    zip_safe=True,
    maintainer="av_localization_ros developers",
    maintainer_email="av-localization@example.com",
    description="Audio-visual speaker localization and tracking for ROS 2.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "av-localize = av_localization_ros.cli:main",
            "localizer_node = av_localization_ros.nodes.localizer_node:main",
            "capture_node = av_localization_ros.nodes.capture_node:main",
            "av-dds-localizer = av_localization_ros.nodes.dds.localizer:main",
            "av-dds-player = av_localization_ros.nodes.dds.player:main",
            "av-dds-capture = av_localization_ros.nodes.dds.capture:main",
        ],
    },
)
