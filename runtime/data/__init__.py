"""The training data sets of `archspec train`: scikit-learn's bundled digits (the default: nothing to
download), CIFAR-10/100 in any of their official layouts, synthetic CIFAR-shaped sets for speed runs,
and ImageNet-style image folders (ImageNet's standard transforms, in persistent loader workers); plus
batching that augments on the training device, and the decode rate of an image folder."""

from .augment import augment
from .batches import batches, check_batch_size, normalize, steps_per_epoch
from .dataset import Dataset, channel_stats
from .folders import FolderLoader, ImageFolder, default_workers, folder_loaders
from .sources import built_in_default, load
from .throughput import decode_throughput
from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["Dataset", "load", "built_in_default", "batches", "check_batch_size", "normalize", "steps_per_epoch",
           "augment", "channel_stats", "folder_loaders", "FolderLoader", "ImageFolder", "default_workers",
           "decode_throughput", "IMAGENET_MEAN", "IMAGENET_STD"]
