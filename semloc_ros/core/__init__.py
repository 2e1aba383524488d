"""The ROS-free core: image codec, geodesy, labels, the geotagged database, re-ranking, the localizer,
the sequence filter, calibration maths. Never imports rclpy or anything above it."""
