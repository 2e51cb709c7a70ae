import pytest

from batch_classify.vocabulary import LabelError, imagenet


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


def test_shared_photo_names_agree_with_their_wnids(photos):
    """Every photo's wnid maps to the class whose name the file carries (crane: the name is ambiguous)."""
    v = imagenet()
    for p in photos:
        wnid, name = p.stem[:9], p.stem[10:]
        assert v.lookup(wnid) == v.wnids.index(wnid)
        if name != "crane":
            assert v.wnids[v.lookup(name)] == wnid, p.name
    assert {v.lookup(p.stem[:9]) % 2 for p in photos} == {0}
