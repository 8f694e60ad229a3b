"""What each architecture family is, its known limitation, and the papers to cite (BibTeX).

An architecture name is matched by the keywords it contains (``"stm-resnet18"`` -> STM); MuG, the
pretraining method every selfvos backbone comes from, is always cited.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

BIBTEX: Dict[str, str] = {
    "mug": """@inproceedings{lu2020mug,
  title     = {Learning Video Object Segmentation from Unlabeled Videos},
  author    = {Lu, Xiankai and Wang, Wenguan and Shen, Jianbing and Tai, Yu-Wing and Crandall, David and Hoi, Steven C. H.},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2020}
}""",
    "manifold_ranking": """@inproceedings{yang2013saliency,
  title     = {Saliency Detection via Graph-Based Manifold Ranking},
  author    = {Yang, Chuan and Zhang, Lihe and Lu, Huchuan and Ruan, Xiang and Yang, Ming-Hsuan},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2013}
}""",
    "cosnet": """@inproceedings{lu2019cosnet,
  title     = {See More, Know More: Unsupervised Video Object Segmentation with Co-Attention Siamese Networks},
  author    = {Lu, Xiankai and Wang, Wenguan and Ma, Chao and Shen, Jianbing and Shao, Ling and Porikli, Fatih},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2019}
}""",
    "stm": """@inproceedings{oh2019stm,
  title     = {Video Object Segmentation using Space-Time Memory Networks},
  author    = {Oh, Seoung Wug and Lee, Joon-Young and Xu, Ning and Kim, Seon Joo},
  booktitle = {IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2019}
}""",
    "feelvos": """@inproceedings{voigtlaender2019feelvos,
  title     = {{FEELVOS}: Fast End-to-End Embedding Learning for Video Object Segmentation},
  author    = {Voigtlaender, Paul and Chai, Yuning and Schroff, Florian and Adam, Hartwig and Leibe, Bastian and Chen, Liang-Chieh},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2019}
}""",
    "cfbi": """@inproceedings{yang2020cfbi,
  title     = {Collaborative Video Object Segmentation by Foreground-Background Integration},
  author    = {Yang, Zongxin and Wei, Yunchao and Yang, Yi},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2020}
}""",
    "agame": """@inproceedings{johnander2019agame,
  title     = {A Generative Appearance Model for End-to-End Video Object Segmentation},
  author    = {Johnander, Joakim and Danelljan, Martin and Brissman, Emil and Khan, Fahad Shahbaz and Felsberg, Michael},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2019}
}""",
    "rvos": """@inproceedings{ventura2019rvos,
  title     = {{RVOS}: End-to-End Recurrent Network for Video Object Segmentation},
  author    = {Ventura, Carles and Bellver, Miriam and Girbau, Andreu and Salvador, Amaia and Marques, Ferran and Giro-i-Nieto, Xavier},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2019}
}""",
    "lvo": """@inproceedings{tokmakov2017lvo,
  title     = {Learning Video Object Segmentation with Visual Memory},
  author    = {Tokmakov, Pavel and Alahari, Karteek and Schmid, Cordelia},
  booktitle = {IEEE International Conference on Computer Vision (ICCV)},
  year      = {2017}
}""",
    "fseg": """@inproceedings{jain2017fusionseg,
  title     = {{FusionSeg}: Learning to Combine Motion and Appearance for Fully Automatic Segmentation of Generic Objects in Videos},
  author    = {Jain, Suyog Dutt and Xiong, Bo and Grauman, Kristen},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2017}
}""",
    "mpnet": """@inproceedings{tokmakov2017mpnet,
  title     = {Learning Motion Patterns in Videos},
  author    = {Tokmakov, Pavel and Alahari, Karteek and Schmid, Cordelia},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2017}
}""",
    "pdb": """@inproceedings{song2018pdb,
  title     = {Pyramid Dilated Deeper {ConvLSTM} for Video Salient Object Detection},
  author    = {Song, Hongmei and Wang, Wenguan and Zhao, Sanyuan and Shen, Jianbing and Lam, Kin-Man},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2018}
}""",
    "ags": """@inproceedings{wang2019ags,
  title     = {Learning Unsupervised Video Object Segmentation through Visual Attention},
  author    = {Wang, Wenguan and Song, Hongmei and Zhao, Shuyang and Shen, Jianbing and Zhao, Sanyuan and Hoi, Steven C. H. and Ling, Haibin},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2019}
}""",
    "munet": """@misc{sun2021munet,
  title  = {{MUNet}: Motion Uncertainty-aware Semi-supervised Video Object Segmentation},
  author = {Sun, Jiadao and Mao, Yuxin and Dai, Yuchao and Zhong, Yiran and Wang, Jianyuan}
}""",
    "masktrack": """@inproceedings{yang2019vis,
  title     = {Video Instance Segmentation},
  author    = {Yang, Linjie and Fan, Yuchen and Xu, Ning},
  booktitle = {IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2019}
}""",
    "davis": """@inproceedings{perazzi2016davis,
  title     = {A Benchmark Dataset and Evaluation Methodology for Video Object Segmentation},
  author    = {Perazzi, Federico and Pont-Tuset, Jordi and McWilliams, Brian and Van Gool, Luc and Gross, Markus and Sorkine-Hornung, Alexander},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2016}
}""",
}


@dataclass(frozen=True)
class Family:
    """One architecture family: keywords in the architecture name, what it is, its limitation, papers."""

    keywords: Tuple[str, ...]
    description: str
    limitation: str
    papers: Tuple[str, ...]


FAMILIES: Tuple[Family, ...] = (
    Family(("cosnet",), "a COSNet zero-shot VOS head: co-attention between Siamese frames, gated and decoded.",
           "Zero-shot: it segments the primary object(s) and cannot be told which object to follow.", ("cosnet",)),
    Family(("munet",), "a MUNet one-shot VOS head: STM memory read fused with a motion-uncertainty cost volume.",
           "Needs the first-frame mask; local motion assumes moderate displacement between frames.", ("munet", "stm")),
    Family(("stm",), "an STM one-shot VOS head: space-time memory of key/value features read by attention.",
           "Needs the first-frame mask; memory is bounded (first, every 5th and previous frame).", ("stm",)),
    Family(("feelvos",), "a FEELVOS one-shot VOS head: pixel embeddings matched globally and locally.",
           "Needs the first-frame mask; local matching assumes moderate motion between frames.", ("feelvos",)),
    Family(("cfbi",), "a CFBI one-shot VOS head: foreground and background embedding matching.",
           "Needs the first-frame mask.", ("cfbi", "feelvos")),
    Family(("agame", "a-game"), "an A-GAME one-shot VOS head: a generative Gaussian-mixture appearance model.",
           "Needs the first-frame mask.", ("agame",)),
    Family(("rvos",), "an RVOS head: a recurrent ConvLSTM decoder over objects and frames.",
           "Objects are decoded in a fixed order; errors can propagate through the recurrence.", ("rvos",)),
    Family(("lvo",), "an LVO zero-shot head: appearance and motion streams with a bidirectional ConvGRU memory.",
           "Depends on optical flow quality.", ("lvo",)),
    Family(("fseg", "fusionseg"), "a FusionSeg two-stream (appearance + motion) zero-shot head.",
           "Depends on optical flow quality.", ("fseg",)),
    Family(("mpnet", "mp-net"), "an MP-Net motion-pattern network on optical flow.",
           "Sees motion only: static objects and camera-induced motion are hard.", ("mpnet",)),
    Family(("pdb",), "a PDB zero-shot head: pyramid dilated convolutions and a bidirectional ConvLSTM.",
           "Zero-shot: it segments the salient object(s) only.", ("pdb",)),
    Family(("ags",), "an AGS zero-shot head: dynamic visual attention guiding the object mask.",
           "Zero-shot: it segments the attended object(s) only.", ("ags",)),
    Family(("masktrack",), "a MaskTrack R-CNN video instance segmentation model.",
           "Detects only the classes it was trained on.", ("masktrack",)),
    Family(("mug",), "a MuG self-supervised VOS model: a feature extractor with frame (pseudo-mask), short-term "
           "tracking, long-term matching and video-level memory objectives, trained without human masks.",
           "Trained on automatic pseudo-masks only: its masks inherit their biases (salient, moving objects).",
           ("manifold_ranking",)),
    Family(("resnet", "backbone"), "a selfvos feature extractor (backbone) for video object segmentation.",
           "A feature extractor: it produces features, not masks, until a head or label propagation is added.",
           ()),
)


def describe(architecture: str) -> Tuple[str, List[str], List[str]]:
    """``architecture`` -> (description, limitations, citation keys); MuG is always cited first.

    A registered class that carries ``info`` (:class:`selfvos.hub.mixin.ModelInfo`) describes itself; other
    names are matched against :data:`FAMILIES` by keyword."""
    from selfvos.hub.mixin import architectures

    info = getattr(architectures().get(architecture), "info", None)
    if info is not None:
        limitations = [info.limitation] if info.limitation else []
        return f"`{architecture}` is {info.summary}", limitations, list(dict.fromkeys(["mug", *info.papers]))
    name = architecture.lower()
    matched = [family for family in FAMILIES if any(key in name for key in family.keywords)]
    if matched:
        description = f"`{architecture}` is " + matched[0].description
    else:
        description = f"`{architecture}` is a selfvos video object segmentation model."
    limitations = [family.limitation for family in matched]
    keys = ["mug"] + [key for family in matched for key in family.papers]
    return description, limitations, list(dict.fromkeys(keys))
