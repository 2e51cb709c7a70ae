from batch_classify.launch import entry

entry()
