"""Importing a recipe script as a module.

``recipes/`` is a folder of scripts, not a package; the demo, the pre-trained
vs random-init comparison and the tests call the recipes' ``main`` functions
in-process through :func:`import_recipe`.
"""

import importlib.util
import pathlib


def import_recipe(path, name=None):
    r"""Imports the Python file at ``path`` and returns it as a module.

    Arguments
    ---------
    path : str or pathlib.Path
        The script (e.g. ``recipes/pretrain/train.py``).
    name : str, optional
        Module name (default: ``aasp_recipe_<parent>_<stem>``).

    Returns
    -------
    module

    Example
    -------
    >>> script = getfixture("tmp_path") / "train.py"
    >>> _ = script.write_text("def main():\n    return 42\n")
    >>> import_recipe(script).main()
    42
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No recipe script at {path}")
    name = name or f"aasp_recipe_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
