"""A small Qwen2-VL trained offline, on CPU, to read passkeys from page images and from text.

``data`` generates tile-exact pages (one character per 28x28 vision-token tile) in the step1 record
format, ``train`` trains ``Qwen2VLForConditionalGeneration`` on them, ``evaluate`` measures held-out
exact match through the project's adapter, ``card`` writes the model card and loss curve.
"""
