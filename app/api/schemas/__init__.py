"""Request and response bodies: :mod:`.common` (errors, timings, health), :mod:`.v1` (the
friendly endpoints), :mod:`.v2` (the Open Inference Protocol, tensor validation) and
:mod:`.explain` (explanations)."""
