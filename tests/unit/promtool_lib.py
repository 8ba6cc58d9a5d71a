# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""promtool for the tests (Debian's prometheus package, unpacked by scripts/lib/setup.sh).

Standard library and pytest only, so that the integration tests can import it too
(``tests.unit.promtool_lib``) without the collection on the path.
"""

import os
import shutil
import subprocess

import pytest


def promtool_path():
    """promtool: $PROMTOOL, then PATH, then where scripts/test.sh unpacks it. Missing is a test
    FAILURE, not a skip: the metrics and rules checks must run wherever the tests run."""
    cache = os.environ.get('NODEMAINT_CACHE_DIR', '/var/cache/nodemaint-image-gc')
    for candidate in (os.environ.get('PROMTOOL'), shutil.which('promtool'),
                      os.path.join(cache, 'promtool', 'usr', 'bin', 'promtool')):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail('promtool not found ($PROMTOOL, PATH, %s/promtool/usr/bin): ./scripts/test.sh unpacks it from '
                "Debian's prometheus package (scripts/lib/setup.sh: setup_promtool)" % cache, pytrace=False)


def promtool(*args, stdin=None, cwd=None):
    return subprocess.run([promtool_path()] + list(args), input=stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=120, check=False)
