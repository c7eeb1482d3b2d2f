"""Hub-module export, loading and publishing of the eight REMEDIS modules.

``exporter`` writes a module (SavedModel, .keras or ONNX) from a run or checkpoint, ``hub_module``
defines the SavedModel interface, ``loader`` gives Keras 3 models back (``medfound.load``),
``publish`` and ``verify`` make and check a release, and ``archive`` packs and safely unpacks
``.tar.gz`` modules. Import from the submodules; TensorFlow is imported only where needed.
"""
