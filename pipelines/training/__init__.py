"""The honest ML training pipeline: labels from the trade tape strictly after each sample, purged
and embargoed cross-validation on event time, and scores with their uncertainty next to baselines.
"""
