"""What every layer of the server uses: settings, the error family, logging and metrics. Imports
nothing else of :mod:`app`."""
