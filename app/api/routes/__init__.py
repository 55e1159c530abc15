"""The routers: ``/v1`` (:mod:`.v1`), the Open Inference Protocol ``/v2`` (:mod:`.v2`),
operations (:mod:`.ops`), explanations (:mod:`.explain`) and the web page (:mod:`.web`); the
helpers they share are in :mod:`.common`."""
