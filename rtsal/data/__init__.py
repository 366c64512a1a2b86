"""Images and training data: safe loading, training photos (black-box labels, evaluation photos
kept out, duplicates), mosaics, data sets."""
