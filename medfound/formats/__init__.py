"""Readers of every backbone format medfound knows, below the resolver.

One module per format, each turning files into the native ``BiTBackbone`` (with ``source``, a
``ModuleInfo``) or into the facts about them: SavedModel folders and hub archives
(``savedmodel``, ``archive``), module metadata (``metadata``, ``module_info``), BiT ``.npz``
checkpoints (``bit_npz``), Keras files and weights (``keras_file``), pretraining run folders
(``run_folder``) and timm folders (``timm_folder``). ``medfound.resolve`` picks the reader;
writers (``medfound.export``) sit above it. Nothing here imports the resolver or a writer.
"""
