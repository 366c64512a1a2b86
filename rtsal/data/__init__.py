"""Images and data sets: safe image loading, training photos (black-box labels, evaluation
photos kept out, duplicates), mosaics, image folders and the sets held in memory (CIFAR-10,
Fashion-MNIST, split folders), labels from folder and file names, ground-truth boxes from
annotation files, the download cache.

It may import the foundation, the engine and the registry."""
