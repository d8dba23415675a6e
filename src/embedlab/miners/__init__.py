"""Miners (triplet and pair), ``PmlMiner`` (any pytorch-metric-learning miner) and the memory
bank of past embeddings."""

from embedlab.miners.memory import MemoryBank
from embedlab.miners.multi_similarity import MultiSimilarityMiner
from embedlab.miners.pairs import PairMiner, Pairs, all_pairs
from embedlab.miners.pml import PmlMiner
from embedlab.miners.triplets import (
    AllTripletsMiner,
    HardTripletsMiner,
    Miner,
    build_miner,
)
from embedlab.registries import MINERS

__all__ = [
    "MINERS",
    "AllTripletsMiner",
    "HardTripletsMiner",
    "MemoryBank",
    "Miner",
    "MultiSimilarityMiner",
    "PairMiner",
    "Pairs",
    "PmlMiner",
    "all_pairs",
    "build_miner",
]
