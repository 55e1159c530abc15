"""Pure tensor ops of pLSTM: ``plstm_1d``, ``plstm_2d``, ``plstm_dag`` and their loop references."""
