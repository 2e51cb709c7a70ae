from batch_classify.cli.launch import entry

entry()
