"""The napari plugin: reader, writers (labels files, DICOM SEG), sample data and three dock widgets.

This subpackage is the only place that imports napari or Qt. Each module has one job:

* ``_geometry``: how a :class:`braunet.io.Volume` is laid out as a napari layer and back (pure numpy);
* ``_reader``, ``_writer``, ``_sample_data``: the npe2 contributions;
* ``_store``: the per-viewer model store the widgets share (current model, fine-tuned versions);
* ``_jobs``: running engine calls in a napari thread worker with progress and cancel;
* ``_segment``, ``_routing``, ``_finetune``: the dock widgets; ``_loss_curve``: a tiny QPainter plot.
"""
