"""Building blocks shared by the supervised heads (``selfvos.heads``): memory read, decoders,
windowed and global pixel matching, convolutional recurrences, co-attention, pyramid dilated convolutions and the
two-stream (appearance + optical flow) blocks.

Plain ``nn.Module``s and functions with no I/O; a head imports what it needs from here, so a block that
two heads use lives once.
"""
from selfvos.layers.coattention import CoAttention
from selfvos.layers.conv_rnn import BidirectionalConvRNN, ConvGRUCell, ConvLSTMCell, run_sequence
from selfvos.layers.decoders import RefinementDecoder, ResBlock, Refine
from selfvos.layers.matching import embedding_distance, global_matching, local_correlation, local_matching
from selfvos.layers.memory_read import KeyValue, memory_read, soft_aggregate
from selfvos.layers.pyramid import PyramidDilatedConv
from selfvos.layers.two_stream import PredictionFusion, ResNetStream, flow_to_image, normalize_flow

__all__ = ["BidirectionalConvRNN", "CoAttention", "ConvGRUCell", "ConvLSTMCell", "KeyValue", "PredictionFusion",
           "PyramidDilatedConv", "Refine", "RefinementDecoder", "ResBlock", "ResNetStream", "embedding_distance",
           "flow_to_image", "global_matching", "local_correlation", "local_matching", "memory_read", "normalize_flow",
           "run_sequence", "soft_aggregate"]
