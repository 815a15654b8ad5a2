"""Agent-trajectory data: formats -> Conversation -> template -> token ids + weights -> packed tf.data batches.

Import submodules directly; only `pipeline` and `tfds_builder` import TensorFlow.
"""
