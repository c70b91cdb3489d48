"""`python -m dldoctor`. Python puts the current folder first on sys.path for `-m`, so a captum.py or
onnxruntime.py lying where the command runs (a downloaded model repository, say) would be imported instead of the
installed package. It is taken off before anything else is imported; modules of the working folder that the user
names (a factory spec, --code, --allow-class) are still found: the folder is appended after site-packages then."""
import os
import sys


def _drop_working_folder() -> None:
    if sys.flags.safe_path or not sys.path:  # python -P / PYTHONSAFEPATH: nothing was put first
        return
    try:
        cwd = os.getcwd()
    except OSError:
        return
    if sys.path[0] == "" or os.path.abspath(sys.path[0]) == cwd:
        del sys.path[0]


_drop_working_folder()

from dldoctor.cli import main  # noqa: E402

main()
