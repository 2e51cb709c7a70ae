from batch_classify.cli import entry

entry()
