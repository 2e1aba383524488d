"""Start the semloc pipeline: segmentation_node -> descriptor_node -> localizer_node.

    ros2 launch semloc_ros semloc.launch.py database:=/path/to/route.semdb image_topic:=/camera/image_raw
    ros2 launch semloc_ros semloc.launch.py database:=route.semdb image_topic:=/cam/image_raw use_compressed:=true \
        model:=my_segmenter.onnx label_mapping:=cityscapes19 map_frame:=semloc_map
    ros2 launch semloc_ros semloc.launch.py database:=route.semdb use_odometry:=true odom_topic:=/odometry/filtered

Parameters come from config/semloc.yaml (or params_file:=...); the arguments below override it only when given
(empty = the parameter file's value). With use_compressed the segmentation node subscribes to
`<image_topic>/compressed` (image_transport's name) unless compressed_topic is given. The localizer's `odom`
(nav_msgs/Odometry, read with use_odometry and the sequence filter) is remapped to odom_topic.
The nodes get FASTDDS_DEFAULT_PROFILES_FILE=fastdds_profile (default: the variable's value when set, else
config/fastdds_large_frames.xml, which lets camera frames over ~0.5 MB through and keeps DDS on loopback; the
camera driver needs it too, see that file).
Without ros2 launch (e.g. a pip-only install), `semloc run` starts the same nodes with the same YAML.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

# launch argument -> (node, parameter, type) it overrides when not empty
OVERRIDES = {
    "use_compressed": ("segmentation_node", "use_compressed", bool),
    "model": ("segmentation_node", "model", str),
    "label_mapping": ("segmentation_node", "label_mapping", str),
    "database": ("localizer_node", "database_path", str),
    "fix_frame_id": ("localizer_node", "fix_frame_id", str),
    "map_frame": ("localizer_node", "map_frame", str),
    "use_odometry": ("localizer_node", "use_odometry", bool),
}


def _as_type(argument: str, value: str, kind: type):
    if kind is not bool:
        return value
    if value.lower() not in ("true", "false"):
        raise ValueError(f"launch argument {argument} must be true or false, got '{value}'")
    return value.lower() == "true"


def _nodes(context):
    """The three nodes, with the given launch arguments as parameter overrides, the camera remappings and the
    localizer's odometry remapping."""
    value = {name: LaunchConfiguration(name).perform(context) for name in (*OVERRIDES, "image_topic",
                                                                           "compressed_topic", "odom_topic",
                                                                           "namespace", "use_sim_time",
                                                                           "params_file")}
    sim_time = value["use_sim_time"].lower() == "true"
    overrides = {node: {"use_sim_time": sim_time}
                 for node in ("segmentation_node", "descriptor_node", "localizer_node")}
    for argument, (node, parameter, kind) in OVERRIDES.items():
        if value[argument]:
            overrides[node][parameter] = _as_type(argument, value[argument], kind)
    image_topic = value["image_topic"]
    compressed_topic = value["compressed_topic"] or image_topic.rstrip("/") + "/compressed"
    camera_remaps = [("image_raw", image_topic), ("image_raw/compressed", compressed_topic)]
    common = {"package": "semloc_ros", "namespace": value["namespace"], "output": "screen", "emulate_tty": True}
    return [
        Node(executable="segmentation_node", name="segmentation_node", remappings=camera_remaps,
             parameters=[value["params_file"], overrides["segmentation_node"]], **common),
        Node(executable="descriptor_node", name="descriptor_node", remappings=camera_remaps,  # RGB descriptors
             parameters=[value["params_file"], overrides["descriptor_node"]], **common),
        Node(executable="localizer_node", name="localizer_node", remappings=[("odom", value["odom_topic"])],
             parameters=[value["params_file"], overrides["localizer_node"]],
             condition=IfCondition(LaunchConfiguration("localizer")), **common),
    ]


def generate_launch_description() -> LaunchDescription:
    config = os.path.join(get_package_share_directory("semloc_ros"), "config")
    default_params = os.path.join(config, "semloc.yaml")
    default_profile = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE",  # the user's profile wins
                                     os.path.join(config, "fastdds_large_frames.xml"))
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS 2 parameter file of the three nodes"),
        DeclareLaunchArgument("database", default_value="",
                              description="GeoDatabase file built with `semloc build-db` (localizer database_path)"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="camera topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("use_compressed", default_value="",
                              description="true: subscribe to sensor_msgs/CompressedImage on compressed_topic"),
        DeclareLaunchArgument("compressed_topic", default_value="",
                              description="CompressedImage topic; empty = <image_topic>/compressed"),
        DeclareLaunchArgument("model", default_value="",
                              description="segmenter: default, untrained:<arch> or a weights file"),
        DeclareLaunchArgument("label_mapping", default_value="",
                              description="the segmenter's label ids -> semloc's: identity, cityscapes19, camvid11, "
                                          "camvid32 or a JSON file"),
        DeclareLaunchArgument("fix_frame_id", default_value="",
                              description="frame_id of /semloc/fix; not given: the GPS antenna frame the map stores"),
        DeclareLaunchArgument("map_frame", default_value="",
                              description="frame of the markers and the path (not the navigation stack's map)"),
        DeclareLaunchArgument("use_odometry", default_value="",
                              description="true: the sequence filter takes the travel between frames from odom_topic"),
        DeclareLaunchArgument("odom_topic", default_value="odom",
                              description="nav_msgs/Odometry topic of the localizer (wheel odometry, VIO, an EKF)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the nodes"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (rosbag replay with --clock)"),
        DeclareLaunchArgument("localizer", default_value="true", description="start the localizer"),
        DeclareLaunchArgument("fastdds_profile", default_value=default_profile,
                              description="Fast DDS XML profile of the nodes (FASTDDS_DEFAULT_PROFILES_FILE); the "
                                          "default carries camera frames over ~0.5 MB and keeps DDS on loopback"),
    ]
    return LaunchDescription([
        *arguments,
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
        OpaqueFunction(function=_nodes),
    ])
