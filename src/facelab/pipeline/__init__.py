"""The DVC stages, one module each: ``prepare``, ``augment``, ``train`` (``train_keypoints`` and
``train_emotion``), ``evaluate`` and ``combine``.

``stages/<stage>.py`` (what ``dvc.yaml`` runs) and ``facelab stage <name>`` call their ``run``
functions. They are leaves: no facelab module imports them (``tests/code/test_structure.py``); the
pieces they share live beside this package in ``facelab`` (``artifacts``, ``training``, ``tracking``,
``champions``, ...).
"""
