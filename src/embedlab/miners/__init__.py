"""Triplet miners and their registry."""

from embedlab.miners.triplets import (
    AllTripletsMiner,
    HardTripletsMiner,
    Miner,
    build_miner,
)
from embedlab.registries import MINERS

__all__ = ["MINERS", "AllTripletsMiner", "HardTripletsMiner", "Miner", "build_miner"]
