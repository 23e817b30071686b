from lrnbn.cli import app

app(prog_name="lrnbn")
