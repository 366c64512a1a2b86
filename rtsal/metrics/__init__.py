"""Each metric once: boxes, the saliency metric, localisation, faithfulness, pixel metrics, and
the scorer that calls those same functions."""
