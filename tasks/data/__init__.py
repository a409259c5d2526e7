"""The real data sets: the `data` config section, the loaders, decoding and batching.

    config.py         DataConfig, DataError, Split; whether the data folder exists (no torch)
    sources.py        ImageSource, ImageSet: what a split is to the pipeline; class_sizes
    datasets.py       Fashion-MNIST, CIFAR-10/100 and the registry by name; normalization
    splits.py         train, validation (carved from train, or an ImageFolder's own val/) and test; load_split
    image_folder.py   ImageFolder trees (ImageNet, Tiny-ImageNet, your own folder)
    class_folders.py  one folder of images per class: imported image sets and exports
    decode.py         one image file to uint8 pixels of the data set's size and channels
    batches.py        a split read batch by batch, files decoded in DataLoader workers

The names most callers need are exported here, each module imported on first use (lazy_loader),
so that ``from tasks.data import DataConfig`` does not import torch.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "config": ["DataConfig", "DataError", "Split"],
    "sources": ["ImageSet", "ImageSource", "class_sizes"],
    "datasets": ["FASHION_MNIST_CLASSES", "needs_measured_normalization", "normalization"],
    "splits": ["has_validation", "load_split"],
})
