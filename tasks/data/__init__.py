"""The real data sets: the `data` config section, the loaders, decoding and batching.

    config.py         DataConfig, DataError, ImageSource (what a split is to the pipeline)
    datasets.py       Fashion-MNIST, CIFAR-10/100 and the registry by name; normalization
    splits.py         train, validation (carved from train, or an ImageFolder's own val/) and test; load_split
    image_folder.py   ImageFolder trees (ImageNet, Tiny-ImageNet, your own folder)
    class_folders.py  one folder of images per class: imported image sets and exports
    decode.py         one image file to uint8 pixels of the data set's size and channels
    batches.py        a split read batch by batch, files decoded in DataLoader workers

The names most callers need are imported here.
"""

from tasks.data.config import DataConfig, DataError, ImageSet, ImageSource, Split
from tasks.data.datasets import FASHION_MNIST_CLASSES, needs_measured_normalization, normalization
from tasks.data.splits import has_validation, load_split

__all__ = ["FASHION_MNIST_CLASSES", "DataConfig", "DataError", "ImageSet", "ImageSource", "Split", "has_validation",
           "load_split", "needs_measured_normalization", "normalization"]
