"""Triplet miners and their registry."""

from embedlab.miners.triplets import (
    MINERS,
    AllTripletsMiner,
    HardTripletsMiner,
    Miner,
    build_miner,
)

__all__ = ["MINERS", "AllTripletsMiner", "HardTripletsMiner", "Miner", "build_miner"]
