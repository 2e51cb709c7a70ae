import pytest

from batch_classify.models.vocabulary import AmbiguousLabel, LabelError, imagenet


def test_wnids_sorted_and_indexed():
    v = imagenet()
    assert v.num_classes == 1000
    assert list(v.wnids) == sorted(v.wnids)
    assert v.lookup("n01440764") == 0 and v.names[0] == "tench"
    assert v.lookup("n15075141") == 999


@pytest.mark.parametrize(
    "label, index",
    [("great_white_shark", 2), ("Great White Shark", 2), ("Tinca tinca", 0), ("Cardigan", 264), ("cardigan", 474)],
)
def test_names_map_by_tier(label, index):
    assert imagenet().lookup(label) == index


def test_ambiguous_and_unknown_labels_are_named():
    v = imagenet()
    with pytest.raises(LabelError, match="several ImageNet classes"):
        v.lookup("panda")  # a lemma of both the giant and the lesser panda
    with pytest.raises(LabelError) as err:
        v.map_labels({"n01440764", "not-a-class", "also-bad"})
    assert "2 of 3 labels" in str(err.value) and "'not-a-class'" in str(err.value) and "--labels" in str(err.value)


#: Display names that WordNet also gives another class as a lemma (crane: the machine's name, a lemma
#: of the bird; partridge: a lemma of the ruffed grouse; harp: a lemma of the harmonica; …).
AMBIGUOUS = {"partridge", "crayfish", "polecat", "crane", "gong", "harp", "maillot", "missile", "tub"}


def test_shared_photo_names_agree_with_their_wnids(photos):
    """Every photo's wnid maps to the class whose name the file carries; a name that WordNet also gives
    another class stops with both candidates named, never guessed."""
    v = imagenet()
    for p in photos:
        wnid, name = p.stem[:9], p.stem[10:]
        assert v.lookup(wnid) == v.wnids.index(wnid)
        if name in AMBIGUOUS:
            with pytest.raises(AmbiguousLabel, match=rf"names several ImageNet classes: .*\({wnid}\)"):
                v.lookup(name)
        else:
            assert v.wnids[v.lookup(name)] == wnid, p.name
    assert {v.lookup(p.stem[:9]) % 2 for p in photos} == {0}


def test_every_name_shared_with_a_lemma_is_ambiguous():
    """At every step (as spelled, any case, lemma), all classes with the label as a name or lemma count."""
    v = imagenet()
    ambiguous = set()
    for name in v.names:
        try:
            v.lookup(name)
        except AmbiguousLabel:
            ambiguous.add(name)
    assert ambiguous == AMBIGUOUS
    with pytest.raises(AmbiguousLabel, match=r"'Crane' names several ImageNet classes: crane bird \(n02012849\), crane \(n03126707\)"):
        v.lookup("Crane")  # any case
    with pytest.raises(AmbiguousLabel, match=r"maillot \(n03710637\), maillot tank suit \(n03710721\)"):
        v.lookup("maillot")


def test_class_names_read_without_torchvision_are_torchvisions():
    """The names come from torchvision's source file, parsed (no import): they must be exactly the
    ``categories`` of its ImageNet weights, in order, and reading them imports neither package."""
    import subprocess
    import sys

    from torchvision.models import ResNet50_Weights

    assert imagenet().names == tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
    code = ("import sys; from batch_classify.models.vocabulary import imagenet; imagenet(); "
            "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
