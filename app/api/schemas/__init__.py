"""Request and response bodies: :mod:`.common` (errors, timings, health, the schema base),
:mod:`.v1` (the friendly endpoints), :mod:`.v2` (the Open Inference Protocol), :mod:`.tensors`
(OIP tensor datatypes and element checks) and :mod:`.explain` (explanations)."""
