"""ledex.server: the ledex language server (`ledex-lsp`, or `python -m ledex.server`; options
in main.py). It runs a workspace's tests in the sandbox, shows each failure as diagnostics,
fixes it in the background with the model and offers verified fixes as code actions.

    main.py          command line: stdio (what editors start) or TCP
    features.py      LSP handlers, one per method, a few lines each
    server.py        LedexServer: workspace folders, settings, routing, commands
    folder.py        one workspace folder: test runs, problems, episode log, published diagnostics
    jobs.py          worker threads, the fix cache, and Entry: one problem's fix lifecycle
    fixwork.py       the fix job (the engine's FixEngine, as `ledex fix` runs it) and the episode log
    diagnostics.py   pure: problems -> lsprotocol diagnostics
    actions.py       pure: problems -> code actions, hover and explanation text
    progress.py      work-done progress (or log lines) for test runs and fixes
    capabilities.py  what the client can show, parsed once
    settings.py      typed settings and their problems
    modelhost.py     the model in its own worker process, swapped on promotion
    watch.py         JUnit report and model registry watchers

lsprotocol types never leave this package.
"""
