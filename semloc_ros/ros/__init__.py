"""ROS 2 glue: the three nodes, parameters, message conversions, the process runner."""
