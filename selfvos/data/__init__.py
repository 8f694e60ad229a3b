"""Video data: the sample type, readers, synthetic videos, clip sampling and augmentation."""
