"""The official ISIC / CVC-ClinicDB data split: a random test share, then group k-fold validation.

Official (``isic_cvc_train_test/data_split_csv.py`` and ``train.py``)::

    np.random.seed(42); train = np.random.choice(os.listdir(images), round(0.9 * n), replace=False)
    GroupKFold(5).split(train, groups=image_id); validation = fold 0

:func:`official_split` repeats this on sorted ids (``os.listdir`` order depends on the file
system, so the official test set cannot be recreated exactly), with whole groups instead of single
images when a grouping is given (frames of one video sequence), and :func:`group_kfold` is
scikit-learn's ``GroupKFold`` rule with the same NumPy calls, so fold membership matches
scikit-learn (< 1.6) for the same training set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from braunet.errors import InputError

__all__ = ["group_kfold", "official_split"]


def group_kfold(groups: Sequence[str], folds: int) -> np.ndarray:
    """Fold index (0..folds-1) of every item, keeping each group in one fold.

    Groups are taken largest first (``np.argsort(sizes)[::-1]``, as scikit-learn) and each goes to
    the fold with the fewest items so far (the first such fold on ties).

    Raises:
        InputError: fewer groups than folds.
    """
    unique, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    if len(unique) < folds:
        raise InputError(f"{folds}-fold split needs at least {folds} groups, got {len(unique)}")
    sizes = np.bincount(inverse)
    order = np.argsort(sizes)[::-1]
    load = np.zeros(folds)
    fold_of_group = np.zeros(len(unique), dtype=np.int64)
    for group in order:
        lightest = int(np.argmin(load))
        load[lightest] += sizes[group]
        fold_of_group[group] = lightest
    return fold_of_group[inverse]


def official_split(
    ids: Sequence[str],
    groups: Sequence[str] | None = None,
    *,
    test_fraction: float = 0.1,
    seed: int = 42,
    folds: int = 5,
    val_fold: int = 0,
) -> tuple[list[int], list[int], list[int]]:
    """Indices (train, validation, test) of ``ids`` split as the official ISIC / CVC scripts.

    Args:
        ids: one id per image (e.g. the file name).
        groups: one group per image (default: the id itself, the official choice). The test share
            and the folds are drawn over whole groups.
        test_fraction: share of groups held out as the test set (0 for none).
        seed: the legacy ``np.random.seed`` of the official script.
        folds, val_fold: GroupKFold over the remaining groups; ``val_fold`` is validation.
    """
    ids = [str(i) for i in ids]
    groups = ids if groups is None else [str(g) for g in groups]
    if len(groups) != len(ids):
        raise ValueError(f"{len(groups)} groups for {len(ids)} ids")
    if not 0 <= val_fold < folds:
        raise ValueError(f"val_fold {val_fold} outside 0..{folds - 1}")
    unique = sorted(set(groups))
    train_size = int(round(len(unique) * (1 - test_fraction)))
    if train_size < folds:
        raise InputError(f"{len(unique)} groups: too few for a {test_fraction:.0%} test share and {folds} folds")
    state = np.random.RandomState(seed)  # reason: the official script's legacy global generator
    train_groups = set(state.choice(np.array(unique, dtype=object), train_size, replace=False).tolist())
    train_all = [i for i, g in enumerate(groups) if g in train_groups]
    test = [i for i, g in enumerate(groups) if g not in train_groups]
    fold = group_kfold([groups[i] for i in train_all], folds)
    val = [i for i, f in zip(train_all, fold, strict=True) if f == val_fold]
    train = [i for i, f in zip(train_all, fold, strict=True) if f != val_fold]
    return train, val, test
