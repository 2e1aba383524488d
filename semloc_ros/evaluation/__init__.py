"""Evaluation: metrics, the recall/localization loop, protocols, calibration fits and plots."""
