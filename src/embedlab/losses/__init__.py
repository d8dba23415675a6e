"""Metric-learning losses."""

from embedlab.losses.triplet import TripletLossWithMiner

__all__ = ["TripletLossWithMiner"]
