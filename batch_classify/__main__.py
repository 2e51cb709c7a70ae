from batch_classify.cli import app

app(prog_name="batch-classify")
