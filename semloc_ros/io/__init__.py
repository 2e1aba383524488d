"""Data in and out: datasets (semloc-sim, image folders, rosbags) and bag playback."""
