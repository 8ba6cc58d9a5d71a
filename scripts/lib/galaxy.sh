# shellcheck shell=bash
# Step `galaxy` of scripts/test.sh: what Galaxy, the docs site build and Execution Environment
# builds run on the collection. Sourced, not executed. Expects: REPO_ROOT, CACHE_DIR, log(),
# limit(), find_python() (setup.sh), and at step time COLLECTION_DIR and BUILD_ROOT.

# The step's tools (tests/requirements-galaxy.txt) in a venv of their own, made like setup_venv's
# (keyed by a hash of the file and the Python). Exports GALAXY_VENV.
setup_galaxy_venv() {
  local py req="$REPO_ROOT/tests/requirements-galaxy.txt" key
  py="$(find_python)" || { log "no Python >= 3.11 with venv/ensurepip found"; return 1; }
  py="$("$py" -c 'import sys; print(getattr(sys, "_base_executable", "") or sys.executable)')"  # not the main venv's
  key="$( { cat "$req"; "$py" -c 'import sys; print(sys.version)'; echo "$py"; } | sha256sum | cut -c1-12)"
  GALAXY_VENV="$CACHE_DIR/venv/galaxy-$key"
  export GALAXY_VENV
  mkdir -p "$CACHE_DIR/venv"
  exec 7>"$CACHE_DIR/venv/galaxy.lock"   # concurrent runs: one creates, the others wait
  flock -w 900 7 || log "galaxy venv: lock not acquired after 15 min (continuing)"
  if [[ ! -f "$GALAXY_VENV/.complete" ]]; then
    log "galaxy venv: creating $GALAXY_VENV with $py (first run: about 2 min)"
    rm -rf "$GALAXY_VENV"
    "$py" -m venv "$GALAXY_VENV" || { exec 7>&-; return 1; }
    "$GALAXY_VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location"
    "$GALAXY_VENV/bin/python" -m pip install -q -r "$req" 2>&1 | grep -v "^WARNING: Location"
    "$GALAXY_VENV/bin/python" -m pip check >/dev/null 2>&1 || log "galaxy venv: pip check reports conflicts (continuing)"
    "$GALAXY_VENV/bin/python" -c 'import galaxy_importer, antsibull_docs, ansible_builder, ansiblelint' \
      || { log "galaxy venv: install incomplete"; exec 7>&-; return 1; }
    touch "$GALAXY_VENV/.complete"
  else
    log "galaxy venv: reusing $GALAXY_VENV"
  fi
  exec 7>&-
}

# ansible-galaxy collection build; galaxy-importer on the artifact (config: tests/galaxy-importer.cfg,
# any WARNING or ERROR fails); antsibull-changelog lint; antsibull-docs lint-collection-docs
# --plugin-docs; ansible-builder introspect on the installed artifact (reads meta/execution-environment.yml
# and its files) and create on docs/execution-environment.yml (a build context only: no registry, no image).
step_galaxy() {
  cd "$COLLECTION_DIR" || return 1
  setup_galaxy_venv || return 1
  export PATH="$GALAXY_VENV/bin:$PATH"   # this step's subshell only; galaxy-importer runs ansible-doc/-lint from PATH
  local out="$BUILD_ROOT/galaxy" tarball f rc=0
  rm -rf "$out" && mkdir -p "$out/importer" || return 1
  echo "----- ansible-galaxy collection build"
  limit ansible-galaxy collection build --force --output-path "$out" . || return 1
  tarball="$(find "$out" -maxdepth 1 -name 'nodemaint-image_gc-*.tar.gz' -print -quit)"
  tar -tzf "$tarball" >"$out/files.txt" || return 1
  for f in meta/runtime.yml meta/execution-environment.yml meta/ee-requirements.txt meta/ee-bindep.txt; do
    grep -qx "$f" "$out/files.txt" || { echo "FAIL: $f is not in $(basename "$tarball")"; rc=1; }
  done
  echo "----- galaxy-importer $(basename "$tarball")"
  (cd "$out/importer" && GALAXY_IMPORTER_CONFIG="$COLLECTION_DIR/tests/galaxy-importer.cfg" \
     limit python -m galaxy_importer.main "$tarball") 2>&1 | tee "$out/importer.log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "FAIL: galaxy-importer exited non-zero"; rc=1; }
  if grep -qE '^(WARNING|ERROR)' "$out/importer.log" || ! grep -q 'Importer processing completed successfully' "$out/importer.log"; then
    echo "FAIL: galaxy-importer reported warnings or errors (above)"; rc=1
  fi
  echo "----- antsibull-changelog lint (changelogs/fragments)"
  limit antsibull-changelog lint || rc=1
  echo "----- antsibull-docs lint-collection-docs --plugin-docs"
  limit antsibull-docs lint-collection-docs --plugin-docs --validate-collection-refs all \
    --disallow-unknown-collection-refs . || rc=1
  echo "----- ansible-builder introspect (the installed artifact) and create (docs/execution-environment.yml)"
  ANSIBLE_COLLECTIONS_PATH="$out/installed" limit ansible-galaxy collection install -p "$out/installed" "$tarball" \
    >/dev/null || return 1
  limit ansible-builder introspect "$out/installed" || rc=1
  if ! limit ansible-builder create -f docs/execution-environment.yml -c "$out/ee-context" \
     || [[ ! -s "$out/ee-context/Containerfile" ]]; then
    echo "FAIL: ansible-builder create wrote no build context"; rc=1
  fi
  return $rc
}
