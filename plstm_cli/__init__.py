"""The ``plstm`` console command."""
