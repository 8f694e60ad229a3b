"""Supervised VOS heads on the shared selfvos backbone, one file each, registered by architecture name.

``selfvos.create_model("stm")`` builds one, ``selfvos.from_pretrained(folder)`` loads a fine-tuned one,
``selfvos.Segmenter(model)`` runs it through the inference core its module registers. The protocol every
head follows is in :mod:`selfvos.heads.base`; shared blocks live in :mod:`selfvos.layers`.
"""
from selfvos.heads.agame import AGAME, AGAMEConfig, AGAMEInferenceConfig, AGAMEInferenceCore
from selfvos.heads.ags import AGS, AGSConfig
from selfvos.heads.base import HeadConfig, VOSHead, one_hot_objects
from selfvos.heads.cfbi import CFBI, CFBIConfig, CFBIInferenceConfig, CFBIInferenceCore, CFBIPlus, CFBIPlusConfig
from selfvos.heads.cosnet import COSNet, COSNetConfig
from selfvos.heads.feelvos import FEELVOS, FEELVOSConfig, FEELVOSInferenceConfig, FEELVOSInferenceCore
from selfvos.heads.fusionseg import FusionSeg, FusionSegConfig
from selfvos.heads.lvo import LVO, LVOConfig
from selfvos.heads.masktrack import MaskTrack, MaskTrackConfig, MaskTrackInferenceConfig
from selfvos.heads.mpnet import MPNet, MPNetConfig
from selfvos.heads.munet import MUNet, MUNetConfig, MUNetInferenceConfig, MUNetInferenceCore
from selfvos.heads.pdb import PDB, PDBConfig
from selfvos.heads.rvos import RVOS, RVOSConfig, RVOSInferenceConfig, RVOSInferenceCore, RVOSZeroShotCore
from selfvos.heads.stm import STM, STMConfig, STMInferenceConfig, STMInferenceCore

__all__ = [
    "AGAME", "AGAMEConfig", "AGAMEInferenceConfig", "AGAMEInferenceCore", "AGS", "AGSConfig", "CFBI", "CFBIConfig",
    "CFBIInferenceConfig", "CFBIInferenceCore", "CFBIPlus", "CFBIPlusConfig", "COSNet", "COSNetConfig", "FEELVOS",
    "FEELVOSConfig", "FEELVOSInferenceConfig", "FEELVOSInferenceCore", "FusionSeg", "FusionSegConfig", "HeadConfig",
    "LVO", "LVOConfig", "MaskTrack", "MaskTrackConfig", "MaskTrackInferenceConfig", "MPNet", "MPNetConfig", "MUNet",
    "MUNetConfig", "MUNetInferenceConfig", "MUNetInferenceCore", "one_hot_objects", "PDB", "PDBConfig", "RVOS",
    "RVOSConfig", "RVOSInferenceConfig", "RVOSInferenceCore", "RVOSZeroShotCore", "STM", "STMConfig",
    "STMInferenceConfig", "STMInferenceCore", "VOSHead"
]
