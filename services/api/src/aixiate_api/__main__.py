from aixiate_api.cli import app

app(prog_name="aixiate")
