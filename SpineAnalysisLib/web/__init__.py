"""Review and correct a segmentation in the browser (``spineanalysis review``), on trame-slicer.

Only :mod:`.command`, :mod:`.files`, :mod:`.job`, :mod:`.navigation` and :mod:`.ownership` import without trame; :mod:`.app` and :mod:`.scene` need the
``.venv-web`` environment (``make web``) or ``pip install 'spineanalysis[web]'``.
"""
