"""What plugins feed: the pluggy hooks, plugin collection that fails soft, black boxes, class
names and explanation methods."""
