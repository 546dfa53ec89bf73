"""Start the audio-visual speaker localizer (and optionally mic capture and RViz).

    ros2 launch av_localization_ros localize.launch.py
    ros2 launch av_localization_ros localize.launch.py capture:=false use_sim_time:=true rviz:=true
        # with: ros2 bag play BAG --clock

Arguments: params_file, capture_params_file, namespace, use_sim_time, rviz, capture.
This file is executed by the ROS installation's Python: it imports only launch and launch_ros.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "av_localization_ros"


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    params_file = LaunchConfiguration("params_file")
    capture_params_file = LaunchConfiguration("capture_params_file")
    namespace = LaunchConfiguration("namespace")
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)

    return LaunchDescription([
        DeclareLaunchArgument(
            "params_file", default_value=PathJoinSubstitution([share, "config", "params.yaml"]),
            description="ROS 2 params YAML of the localizer (descriptions: core/params.py, or "
                        "'ros2 param describe')."),
        DeclareLaunchArgument(
            "capture_params_file",
            default_value=PathJoinSubstitution([share, "config", "capture.yaml"]),
            description="ROS 2 params YAML of the capture node (device, channels, rate, format)."),
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="Namespace for the nodes and their relative topics."),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false",
            description="Use /clock (set true when replaying a bag with `ros2 bag play --clock`)."),
        DeclareLaunchArgument(
            "rviz", default_value="false", description="Start RViz with the bundled config."),
        DeclareLaunchArgument(
            "capture", default_value="true",
            description="Start the PortAudio capture node (false when audio comes from a bag)."),
        Node(
            package=PACKAGE, executable="capture_node", name="av_capture", namespace=namespace,
            parameters=[capture_params_file, {"use_sim_time": use_sim_time}],
            condition=IfCondition(LaunchConfiguration("capture")),
            output="screen", emulate_tty=True),
        Node(
            package=PACKAGE, executable="localizer_node", name="av_localizer", namespace=namespace,
            parameters=[params_file, {"use_sim_time": use_sim_time}],
            output="screen", emulate_tty=True),
        Node(
            package="rviz2", executable="rviz2", name="rviz2", namespace=namespace,
            arguments=["-d", PathJoinSubstitution([share, "rviz", "av_localization.rviz"])],
            parameters=[{"use_sim_time": use_sim_time}],
            condition=IfCondition(LaunchConfiguration("rviz")),
            output="screen"),
    ])
