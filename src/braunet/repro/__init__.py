"""Paper reproduction kit: the official recipes, TransUNet-format Synapse data, BiFormer encoder
initialisation and the official evaluation protocols.

* :mod:`~braunet.repro.recipes` - the official training protocols as JSON recipes (``recipes/``).
* :mod:`~braunet.repro.runner` - runs a recipe (``braunet train --recipe``), torchrun/DDP included.
* :mod:`~braunet.repro.transunet` - ``train_npz`` / ``test_vol_h5`` / ``lists_Synapse`` reader and writer.
* :mod:`~braunet.repro.biformer_init` - ``--init-encoder``: the official ``load_from`` rule, safe loading.
* :mod:`~braunet.repro.official_eval` - ``braunet evaluate --protocol official``.
* :mod:`~braunet.repro.augment`, :mod:`~braunet.repro.splits` - the official augmentation and split.

See docs/reproduce.md for the commands per dataset. Modules import torch lazily where they can;
import them directly (``from braunet.repro.recipes import load_recipe``).
"""
