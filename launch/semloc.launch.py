"""Start the semloc pipeline: segmentation_node -> descriptor_node -> localizer_node.

    ros2 launch semloc_ros semloc.launch.py database:=/path/to/route.semdb image_topic:=/camera/image_raw

Parameters come from config/semloc.yaml (or params_file:=...); `database` and `image_topic` override it.
Without ros2 launch (e.g. a pip-only install), `semloc run` starts the same nodes with the same YAML.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def _localizer(context, params_file, sim_time, namespace):
    """The localizer; `database:=` overrides database_path only when given, so a params file can set it."""
    overrides = dict(sim_time)
    database = LaunchConfiguration("database").perform(context)
    if database:
        overrides["database_path"] = database
    return [Node(package="semloc_ros", executable="localizer_node", name="localizer_node",
                 namespace=namespace, output="screen", emulate_tty=True,
                 parameters=[params_file, overrides],
                 condition=IfCondition(LaunchConfiguration("localizer")))]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("semloc_ros"), "config", "semloc.yaml")
    params_file = LaunchConfiguration("params_file")
    image_topic = LaunchConfiguration("image_topic")
    namespace = LaunchConfiguration("namespace")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS 2 parameter file of the three nodes"),
        DeclareLaunchArgument("database", default_value="",
                              description="GeoDatabase file built with `semloc build-db`"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="camera topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("compressed_topic", default_value="/camera/image_raw/compressed",
                              description="camera topic when use_compressed is true"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the nodes"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (rosbag replay with --clock)"),
        DeclareLaunchArgument("localizer", default_value="true", description="start the localizer"),
    ]
    sim_time = {"use_sim_time": LaunchConfiguration("use_sim_time")}
    camera_remaps = [("image_raw", image_topic),
                     ("image_raw/compressed", LaunchConfiguration("compressed_topic"))]
    nodes = [
        Node(package="semloc_ros", executable="segmentation_node", name="segmentation_node",
             namespace=namespace, parameters=[params_file, sim_time], remappings=camera_remaps,
             output="screen", emulate_tty=True),
        Node(package="semloc_ros", executable="descriptor_node", name="descriptor_node",
             namespace=namespace, parameters=[params_file, sim_time], remappings=camera_remaps,
             output="screen", emulate_tty=True),
        OpaqueFunction(function=_localizer, args=[params_file, sim_time, namespace]),
    ]
    return LaunchDescription([*arguments, *nodes])
