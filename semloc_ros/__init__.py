"""semloc_ros: visual localization by image retrieval on semantic segmentation.

The science lives in ROS-free modules (importable without rclpy); the ``*_node`` modules are thin rclpy
wrappers that parse parameters, convert messages and call them.
"""

__version__ = "0.1.0"
