"""Class selectors resolved against the ImageNet-1k names that come with timm."""

import pytest

from rtsal.errors import AmbiguousClassError, UnknownClassError
from rtsal.registry.classes import ClassResolver, normalise_class_name
from rtsal.registry.providers.timm_provider import imagenet_classes


@pytest.fixture(scope="module")
def imagenet():
    names, synonyms = imagenet_classes()
    return ClassResolver(names, synonyms)


def test_imagenet_has_1000_classes(imagenet):
    assert len(imagenet.class_names) == 1000
    assert imagenet.class_names[162] == "beagle"


@pytest.mark.parametrize(
    ("selector", "index"),
    [
        ("beagle", 162),
        ("Egyptian cat", 285),
        ("egyptian_cat", 285),
        ("EGYPTIAN-CAT", 285),
        ("  Egyptian   cat ", 285),
        ("n02088364", 162),
        ("5", 5),
        (5, 5),
        (0, 0),
        (999, 999),
        ("tabby cat", 281),  # a second lemma of class 281 ("tabby, tabby cat")
    ],
)
def test_resolve(imagenet, selector, index):
    assert imagenet.resolve(selector) == index


def test_resolve_many(imagenet):
    assert imagenet.resolve_many(["beagle", 3, "n02088364"]) == [162, 3, 162]


def test_crane_is_ambiguous(imagenet):
    with pytest.raises(AmbiguousClassError) as err:
        imagenet.resolve("crane")
    msg = str(err.value)
    assert "134" in msg and "517" in msg
    assert [c.split(":")[0] for c in err.value.candidates] == ["134", "517"]


def test_misspelling_suggests_the_name(imagenet):
    with pytest.raises(UnknownClassError) as err:
        imagenet.resolve("beagel")
    assert isinstance(err.value, KeyError)
    assert "beagle" in err.value.matches
    assert "'beagle'" in str(err.value)


@pytest.mark.parametrize("selector", [1000, "1000", -1, 12345])
def test_index_out_of_range(imagenet, selector):
    with pytest.raises(UnknownClassError, match="0 to 999"):
        imagenet.resolve(selector)


def test_small_resolver_without_synonyms():
    r = ClassResolver(["T-shirt/top", "Trouser", "Ankle boot"])
    assert r.resolve("ankle_boot") == 2
    assert r.resolve("TROUSER") == 1
    assert r.resolve("t shirt/top") == 0
    with pytest.raises(UnknownClassError, match="0 to 2"):
        r.resolve(3)
    with pytest.raises(UnknownClassError):
        r.resolve("sandal")


def test_normalise_class_name():
    assert normalise_class_name("  Egyptian__cat-") == "egyptian cat"
    assert normalise_class_name("Granny Smith") == normalise_class_name("granny-smith")
    assert normalise_class_name("carpenter's kit") == "carpenters kit"
