"""What the pipeline costs, measured: one module per ``semloc benchmark`` kind (stages, threads, e2e, index,
build) and the helpers they share (common). Every figure is a median over repeats; ratios compare measurements of
the same run. Every process started here that uses ROS 2 gets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, the
domain id given and the large-frame Fast DDS profile (``ros.runner.apply_ros_defaults``)."""
