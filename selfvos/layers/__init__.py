"""Building blocks shared by the supervised heads (``selfvos.heads``): memory read, decoders,
windowed and global pixel matching, convolutional recurrences.

Plain ``nn.Module``s and functions with no I/O; a head imports what it needs from here, so a block that
two heads use lives once.
"""
from selfvos.layers.conv_rnn import BidirectionalConvRNN, ConvGRUCell, ConvLSTMCell, run_sequence
from selfvos.layers.decoders import RefinementDecoder, ResBlock, Refine
from selfvos.layers.matching import embedding_distance, global_matching, local_correlation, local_matching
from selfvos.layers.memory_read import KeyValue, memory_read, soft_aggregate

__all__ = ["BidirectionalConvRNN", "ConvGRUCell", "ConvLSTMCell", "KeyValue", "Refine", "RefinementDecoder", "ResBlock",
           "embedding_distance", "global_matching", "local_correlation", "local_matching", "memory_read",
           "run_sequence", "soft_aggregate"]
